"""The petitions service: the life of a petition, from draft to archive."""
