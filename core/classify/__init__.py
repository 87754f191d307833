"""Classifying reviews: the service that validates, answers and records them, the coalescing of
concurrent requests, file uploads, and the read side of reviews."""
