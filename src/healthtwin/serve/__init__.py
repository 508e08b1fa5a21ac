"""healthtwin.serve."""
