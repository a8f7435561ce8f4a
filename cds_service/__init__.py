"""Calcinosis cutis risk CDS Hooks service."""
