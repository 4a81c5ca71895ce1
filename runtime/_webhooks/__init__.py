"""Signed webhooks: signatures checked the providers' ways, each delivery run once."""

from .deliveries import first_delivery
from .signatures import SCHEMES, Scheme, SignatureRejected

__all__ = ["SCHEMES", "Scheme", "SignatureRejected", "first_delivery"]
