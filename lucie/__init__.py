"""lucie: the thin command line in front of the pipeline, the audit and the publisher."""
