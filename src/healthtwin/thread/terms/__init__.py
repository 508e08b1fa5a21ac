"""healthtwin.thread.terms."""
