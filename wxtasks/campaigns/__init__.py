"""Campaigns (群发): a bulk send as an object you can watch, pause, resume and cancel."""
