"""Motion control: constraints stated in joints and metres (`constraints`), generation under them
(`sampling`), and long multi-prompt takes (`timeline`)."""
