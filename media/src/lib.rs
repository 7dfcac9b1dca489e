//! Sans-IO media: RTP/RTCP views, relay hot path, codecs (grows with the calls issue).
#![forbid(unsafe_code)]
