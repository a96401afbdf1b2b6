"""Domain XML skeletons, installed as virtlib's package data (``virtlib.xml_templates``)."""
