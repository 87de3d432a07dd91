"""Measuring retrieval quality: golden questions, BEIR sets, the kit and the naive baseline."""
