//! Sans-IO IVR flow model and interpreter (grows with the IVR issue).
#![forbid(unsafe_code)]
