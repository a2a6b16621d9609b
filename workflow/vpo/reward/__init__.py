"""Checklist reward models: a VLM answers yes/no questions about a video; weights turn answers into scores."""
