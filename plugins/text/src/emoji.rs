//! Emoji → English glosses, the way VADER handles emoji: each emoji is replaced
//! by words, and the words are scored like the rest of the message (by the
//! lexicon, VADER's rules and the word table).
//!
//! The glosses are the Unicode CLDR short names of the emoji (Unicode data is
//! facts, not a creative work), lower-cased; where the name holds no word of
//! the VADER lexicon for the feeling the emoji conveys, one common word for it
//! is appended (marked `+` in the comments). Nothing here is fitted.
//! Skin-tone modifiers, variation selectors and zero-width joiners are
//! dropped; emoji not in the table are left as they are (they carry no
//! sentiment and count as unknown tokens).

/// (emoji, gloss). Sorted by code point for binary search.
const GLOSSES: &[(char, &str)] = &[
    ('\u{2614}', "umbrella with rain drops"),
    ('\u{2639}', "frowning face"),
    ('\u{263A}', "smiling face"),
    ('\u{2728}', "sparkles"),
    ('\u{2764}', "red heart"),
    ('\u{1F339}', "rose love"),                        // +love
    ('\u{1F381}', "wrapped gift"),                     //
    ('\u{1F389}', "party popper celebrate"),           // +celebrate
    ('\u{1F38A}', "confetti ball celebrate"),          // +celebrate
    ('\u{1F44B}', "waving hand"),                      //
    ('\u{1F44C}', "ok hand"),                          //
    ('\u{1F44D}', "thumbs up approval"),               // +approval
    ('\u{1F44E}', "thumbs down dislike"),              // +dislike
    ('\u{1F44F}', "clapping hands applause"),          // +applause
    ('\u{1F480}', "skull dead"),                       // +dead
    ('\u{1F494}', "broken heart"),                     //
    ('\u{1F495}', "two hearts"),                       //
    ('\u{1F496}', "sparkling heart"),                  //
    ('\u{1F497}', "growing heart"),                    //
    ('\u{1F499}', "blue heart"),                       //
    ('\u{1F49A}', "green heart"),                      //
    ('\u{1F49B}', "yellow heart"),                     //
    ('\u{1F49C}', "purple heart"),                     //
    ('\u{1F4A4}', "zzz"),                              //
    ('\u{1F4A9}', "pile of poo"),                      //
    ('\u{1F4AA}', "flexed biceps strong"),             // +strong
    ('\u{1F4AF}', "hundred points"),                   //
    ('\u{1F525}', "fire"),                             //
    ('\u{1F600}', "grinning face"),                    //
    ('\u{1F601}', "beaming face with smiling eyes"),   //
    ('\u{1F602}', "face with tears of joy"),           //
    ('\u{1F603}', "grinning face with big eyes"),      //
    ('\u{1F604}', "grinning face with smiling eyes"),  //
    ('\u{1F605}', "grinning face with sweat"),         //
    ('\u{1F606}', "grinning squinting face laughing"), // +laughing
    ('\u{1F607}', "smiling face with halo"),           //
    ('\u{1F608}', "smiling face with horns"),          //
    ('\u{1F609}', "winking face"),                     //
    ('\u{1F60A}', "smiling face with smiling eyes"),   //
    ('\u{1F60B}', "face savoring food"),               //
    ('\u{1F60C}', "relieved face"),                    //
    ('\u{1F60D}', "smiling face with heart-eyes"),     //
    ('\u{1F60E}', "smiling face with sunglasses"),     //
    ('\u{1F60F}', "smirking face"),                    //
    ('\u{1F610}', "neutral face"),                     //
    ('\u{1F611}', "expressionless face"),              //
    ('\u{1F612}', "unamused face annoyed"),            // +annoyed
    ('\u{1F613}', "downcast face with sweat"),         //
    ('\u{1F614}', "pensive face"),                     //
    ('\u{1F615}', "confused face"),                    //
    ('\u{1F616}', "confounded face"),                  //
    ('\u{1F617}', "kissing face"),                     //
    ('\u{1F618}', "face blowing a kiss"),              //
    ('\u{1F619}', "kissing face with smiling eyes"),   //
    ('\u{1F61A}', "kissing face with closed eyes"),    //
    ('\u{1F61B}', "face with tongue"),                 //
    ('\u{1F61C}', "winking face with tongue"),         //
    ('\u{1F61D}', "squinting face with tongue"),       //
    ('\u{1F61E}', "disappointed face"),                //
    ('\u{1F61F}', "worried face"),                     //
    ('\u{1F620}', "angry face"),                       //
    ('\u{1F621}', "enraged face"),                     //
    ('\u{1F622}', "crying face"),                      //
    ('\u{1F623}', "persevering face"),                 //
    ('\u{1F624}', "face with steam from nose"),        //
    ('\u{1F625}', "sad but relieved face"),            //
    ('\u{1F626}', "frowning face with open mouth"),    //
    ('\u{1F627}', "anguished face"),                   //
    ('\u{1F628}', "fearful face"),                     //
    ('\u{1F629}', "weary face"),                       //
    ('\u{1F62A}', "sleepy face"),                      //
    ('\u{1F62B}', "tired face"),                       //
    ('\u{1F62C}', "grimacing face"),                   //
    ('\u{1F62D}', "loudly crying face"),               //
    ('\u{1F62E}', "face with open mouth"),             //
    ('\u{1F62F}', "hushed face"),                      //
    ('\u{1F630}', "anxious face with sweat"),          //
    ('\u{1F631}', "face screaming in fear"),           //
    ('\u{1F632}', "astonished face"),                  //
    ('\u{1F633}', "flushed face"),                     //
    ('\u{1F634}', "sleeping face"),                    //
    ('\u{1F635}', "dizzy face"),                       //
    ('\u{1F636}', "face without mouth"),               //
    ('\u{1F637}', "face with medical mask"),           //
    ('\u{1F641}', "slightly frowning face"),           //
    ('\u{1F642}', "slightly smiling face"),            //
    ('\u{1F643}', "upside-down face"),                 //
    ('\u{1F644}', "face with rolling eyes annoyed"),   // +annoyed
    ('\u{1F64C}', "raising hands celebrate"),          // +celebrate
    ('\u{1F64F}', "folded hands"),                     //
    ('\u{1F912}', "face with thermometer sick"),       // +sick
    ('\u{1F914}', "thinking face"),                    //
    ('\u{1F915}', "face with head-bandage hurt"),      // +hurt
    ('\u{1F917}', "hugging face"),                     //
    ('\u{1F91D}', "handshake"),                        //
    ('\u{1F91E}', "crossed fingers hope"),             // +hope
    ('\u{1F922}', "nauseated face sick"),              // +sick
    ('\u{1F923}', "rolling on the floor laughing"),    //
    ('\u{1F924}', "drooling face"),                    //
    ('\u{1F929}', "star-struck amazed"),               // +amazed
    ('\u{1F92A}', "zany face fun"),                    // +fun
    ('\u{1F92C}', "face with symbols on mouth angry"), // +angry
    ('\u{1F92E}', "face vomiting sick"),               // +sick
    ('\u{1F92F}', "exploding head shocked"),           // +shocked
    ('\u{1F970}', "smiling face with hearts"),         //
    ('\u{1F971}', "yawning face bored"),               // +bored
    ('\u{1F973}', "partying face"),                    //
    ('\u{1F975}', "hot face"),                         //
    ('\u{1F976}', "cold face"),                        //
    ('\u{1F97A}', "pleading face"),                    //
];

/// The gloss of an emoji, if it is in the table.
pub fn gloss(c: char) -> Option<&'static str> {
    GLOSSES
        .binary_search_by(|(e, _)| e.cmp(&c))
        .ok()
        .map(|i| GLOSSES[i].1)
}

/// Characters that only modify an emoji: variation selectors, zero-width
/// joiner, skin-tone modifiers.
pub fn is_modifier(c: char) -> bool {
    matches!(
        c,
        '\u{FE0E}' | '\u{FE0F}' | '\u{200D}' | '\u{1F3FB}'..='\u{1F3FF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in GLOSSES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} / {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(gloss('😂'), Some("face with tears of joy"));
        assert_eq!(gloss('a'), None);
        assert!(is_modifier('\u{1F3FD}'));
    }
}
