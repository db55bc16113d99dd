"""One Streamlit page per module; each module's ``render()`` draws it (app.py runs them through st.navigation).

Not named ``pages/``: Streamlit would also auto-discover a ``pages/`` folder beside app.py and, on a fresh
browser load of a deep link, resolve the URL against that folder before ``st.navigation`` runs ("Page not
found", or the page without the app's layout).
"""
