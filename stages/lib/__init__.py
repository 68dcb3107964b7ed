"""Libraries, one topic per module. They import stages.core and each other, never a stage module."""
