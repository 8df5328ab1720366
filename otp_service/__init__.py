"""otp-service: one-time passwords for a Sunbird-style platform."""
from __future__ import annotations


def create_app(*args, **kwargs):
    """The Flask app factory (see otp_service.entrypoints.app.create_app)."""
    from .entrypoints.app import create_app as factory

    return factory(*args, **kwargs)


__all__ = ["create_app"]
