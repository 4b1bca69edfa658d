"""The search spec: one YAML file read strictly into typed, validated configuration.

`config` holds what a spec means (the pydantic models `Spec`, `WorkersSpec`, `LatencySpec`, ...,
the precedence of flags, environment and file, and the study fingerprint); `text` turns a file
into the mapping `config` validates (refusing duplicate keys) and words every problem as one
line naming its key. The algorithms' own parameters are checked by their config dataclasses in
`search.algorithms`, never again here.
"""
