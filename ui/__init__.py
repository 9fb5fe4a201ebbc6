"""What the dashboard's pages share: identity and setup, cached tlcore calls, the job panel,
the sidebar, the freeze editor and the Train/Data/Evaluate sections.

Page scripts live in ``pages/`` (each one routed by ``app.py``'s ``st.navigation``);
everything they import besides ``tlcore`` lives here. tlcore never imports this package.
"""
