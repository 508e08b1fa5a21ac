"""healthtwin.care."""
