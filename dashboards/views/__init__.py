"""One Streamlit page per module; each module's ``render()`` draws it (app.py runs them through st.navigation)."""
