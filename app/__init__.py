"""Streamlit app: the router (Home.py), views, cached loaders, figures, pickers and 3D rendering."""
