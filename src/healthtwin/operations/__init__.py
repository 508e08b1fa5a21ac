"""healthtwin.operations."""
