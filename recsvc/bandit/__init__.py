"""Artwork personalization: which variant of each item a user sees."""
