"""healthtwin.twin."""
