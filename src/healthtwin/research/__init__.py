"""healthtwin.research."""
