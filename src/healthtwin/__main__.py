from healthtwin.cli import main

main()
