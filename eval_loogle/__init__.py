"""LooGLE evaluation: closed-book answers, judging, scores."""
