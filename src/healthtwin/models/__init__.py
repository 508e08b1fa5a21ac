"""healthtwin.models."""
