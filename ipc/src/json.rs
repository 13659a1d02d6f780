//! A faithful JSON view of a document. PLACEHOLDER: being written.
