"""The ways in: the Flask app (HTTP API) and the `otp-service` command line."""
