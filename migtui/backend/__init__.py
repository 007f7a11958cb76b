"""Backends: what reaches VMs. Each implements migtui.backend.api; none imports Textual."""
