"""Glucose patient twin: personalisation, forecasts, what-if, control, alerts, FHIR write-back."""
