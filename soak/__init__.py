"""The ``soak`` command and the runner that joins the sut, the sampler, Locust and the analysis."""
