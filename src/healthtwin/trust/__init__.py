"""healthtwin.trust."""
