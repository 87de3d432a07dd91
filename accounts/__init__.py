"""Who people are and what they may do: sign-on, roles, personal API tokens, rate limits."""
