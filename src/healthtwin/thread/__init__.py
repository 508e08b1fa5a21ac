"""healthtwin.thread."""
