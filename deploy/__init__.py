"""Running the app for a clinic: ``python -m deploy.nginx`` puts nginx in front of Streamlit
(docs/deploy.md)."""
