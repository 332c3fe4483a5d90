pub(crate) mod decimal;
pub(crate) mod inline;
