"""healthtwin.twin.store."""
