"""Insight for admins and auditors: usage, knowledge gaps, and how well answers are supported.

`scope` the answers and documents a viewer may see here (the rule itself is
`ingestion.access.insight_scope_for`); `usage` the usage figures; `charts` inline SVG charts
drawn on the server; `clusters` average-linkage clustering of unit vectors; `gaps` abstained
and poorly rated answers grouped by similar question; `support` whether each answer sentence
is supported by a cited passage; `vectors` the encoder's vectors, the recent ones remembered;
`views`, `urls` the pages.
"""
