"""City trips: taxi trips of New York business days in early 2019, on ecm_assets."""
