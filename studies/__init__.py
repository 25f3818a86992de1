"""Study definitions: one typed, declarative registry."""
