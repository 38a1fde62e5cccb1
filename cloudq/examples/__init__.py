"""Example apps shipped with cloudq.

:mod:`cloudq.examples.shop` is the app ``cloudq demo`` runs, and the one the container
image and deployment templates point at (``cloudq worker cloudq.examples.shop:app``).
"""
