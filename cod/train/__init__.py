"""Training: data, losses, Lightning modules and stage configs (`cod train CONFIG`)."""
