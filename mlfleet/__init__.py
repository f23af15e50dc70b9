"""mlfleet control-node tools (the Ansible content lives in roles/, playbooks/ and plugins/)."""
