"""Shared recommender machinery: backbones, the three generation paradigms, SASRec and the trainer."""
