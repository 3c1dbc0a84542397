"""rayrag.pipelines."""
