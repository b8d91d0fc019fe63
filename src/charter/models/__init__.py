"""The cognitive layer's model side: provider interface, proposals and the scripted provider."""
