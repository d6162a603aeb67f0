"""Thin HTTP routes; each module registers its routes on the app for the app's settings.

Routes are added to the app itself rather than through ``include_router``: an included router
costs every request ~20 us of matching in this FastAPI version, as much as /predict's own work.
"""
