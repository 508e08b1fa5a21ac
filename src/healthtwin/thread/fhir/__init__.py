"""healthtwin.thread.fhir."""
