"""Markerless camera-to-robot pose and joint-angle estimation from one RGB camera."""

__version__ = '0.1.0'
