"""Streamlit app: entry point (Home.py), shared widgets and 3D rendering helpers."""
