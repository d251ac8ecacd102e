# Staff-side models (tickets, canned replies, notes) live here.
