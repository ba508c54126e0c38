"""The heuristic signals of prompt injection, per family, as linear-time regular expressions.

Each signal has a weight: how sure one hit makes us on its own. Hits of one sentence combine
as a noisy-or (1 - product of (1 - weight)), so a weak cue ("without asking") only counts next
to another one ("send ... the API keys"). Patterns use ``[^.\\n]{0,N}`` gaps, never ``.*``: a cue
and its object must sit in one sentence, near each other. Matching is case-insensitive.

The families are those of the OWASP LLM01 write-ups: override of earlier instructions,
system-prompt extraction, persona / developer-mode jailbreaks, instructions hidden in documents
and tool results, encodings and payload splitting, tool abuse by agents, and the override and
extraction phrasings of other languages. Matching is on the lower-cased UTF-8 bytes, so
``\\b`` and ``\\w`` are ASCII: a signal must not put ``\\b`` next to a non-ASCII letter, nor a
non-ASCII letter in a ``[...]`` class (write ``(c|ç)``). The signals of tool abuse
(``agents.py``), of other languages (``languages.py``) and of override of earlier context
(``overrides.py``: "forget everything before that", "well done, now come new tasks") live
apart, as (weight, expression[, unless]) tuples. Encoded text (base64, ROT13, leetspeak,
spaced-out letters) is decoded by ``injection`` and scanned with the same signals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .agents import TOOL_ABUSE
from .languages import CONTEXT_OTHER, MORE_LANGUAGES, OTHER_LANGUAGES
from .overrides import CONTEXT_OVERRIDE, TO_DO


@dataclass(frozen=True, slots=True)
class Signal:
    """``unless``: a benign context that damps the signal when its sentence holds it (Python
    ``re``, checked only on a hit): "developer mode" on a phone is a setting, not a persona."""

    family: str
    weight: float
    expr: str
    unless: str = ""


# Devices and software where "developer / debug / god mode" is a setting.
_DEVICE = (
    r"\b(phone|android|iphone|ios|pixel|samsung|windows|mac ?os|linux|chrome|firefox|browser|"
    r"extension|settings|app|console|xbox|playstation|router|game|minecraft|bios|tv)\b"
)


_G = r"[^.\n]{0,40}"  # a gap inside one sentence
_G2 = r"[^.\n]{0,80}"
_VERB_IGNORE = (
    r"(ignore|ignoring|disregard|forget|skip|discard|override|bypass|supersede|set aside|"
    r"pay no attention to|never ?mind|cancel|drop|abandon|stop (following|obeying)|scrap|"
    r"throw (out|away)|toss( out)?|overlook|nullify|revoke|withdraw|erase|wipe)"
)
_EARLIER = (
    r"(previous|prior|earlier|above|preceding|antecedent|original|initial|old|former|"
    r"configured|existing|current|standing)"
)
_ORDERS = (
    r"(instructions?|directives?|rules|guidelines|guidance|prompts?|programming|constraints|"
    r"orders|commands|directions|system (message|prompt)|policies)"
)
_SECRET = (
    r"(system|initial|original|hidden|secret|confidential|pre-?|first|developer|operator)"
    r"[ -]?(prompt|message|instructions?|rules|directives?|configuration|guidelines|text)"
)
_SHOW = (
    r"(repeat|print|show|output|reveal|display|dump|leak|recite|echo|paste|copy|quote|list|"
    r"tell me|translate|summari[sz]e|write out|give me)"
)

SIGNALS: tuple[Signal, ...] = (
    # -- override of earlier instructions
    Signal("override", 0.92, rf"\b{_VERB_IGNORE}\b{_G}\b{_EARLIER}\b{_G}\b{_ORDERS}\b"),
    Signal(
        "override",
        0.85,
        rf"\b{_VERB_IGNORE}\b{_G}\b(your|all|every|whatever)\b[^.\n]{{0,25}}"
        rf"\b{_ORDERS}\b",
    ),
    Signal(
        "override",
        0.85,
        rf"\b{_EARLIER}\s+{_ORDERS}\s+(are|is|were|have been)\s+(now\s+)?"
        r"(void|cancell?ed|revoked|null|obsolete|no longer|lifted|suspended)",
    ),
    Signal(
        "override",
        0.85,
        r"\b(everything|anything|all|the text) (above|before) (this|here)"
        r"[^.\n]{0,20}\b(is|are) (void|fake|irrelevant|cancell?ed|null)",
    ),
    Signal(
        "override",
        0.8,
        rf"\b(do not|don't|stop|no longer|never again)\s+(follow|obey)\w*\s+"
        rf"(your|the|any)\s+(\w+\s+)?{_ORDERS}",
    ),
    Signal(
        "override",
        0.75,
        r"\b(new|real|only|actual|true) (system prompt|instructions?|"
        r"directives?|task)\s*(is|are|:)",
        TO_DO,  # "new task: book the flight" in a to-do list
    ),
    Signal("override", 0.8, rf"\b{_ORDERS}\s+(no longer|don't|do not) apply\b"),
    Signal(
        "override",
        0.7,
        r"\b(treat|consider) this (message|text) as (your )?(the )?"
        r"(new )?(system|instruction)",
    ),
    Signal(
        "override",
        0.75,
        rf"\b(above|previous|prior) (prompt|instructions?|{_ORDERS}) "
        r"(was|were) (just )?(a test|fake|wrong)",
    ),
    Signal("override", 0.8, r"\b(start fresh|from scratch) with (mine|my instructions)"),
    Signal(
        "override",
        0.8,
        rf"\b{_VERB_IGNORE}\b{_G}\b{_ORDERS}\b[^.\n]{{0,30}}\b(from|at) (the )?(start|top|"
        r"beginning)\b",
    ),
    Signal(
        "override",
        0.8,
        r"\b(whatever|everything|anything|all) (your |the )?(operator|developer|creator|owner|"
        r"company|admin)s? (configured|set up|wrote|told you|gave you)\b[^.\n]{0,30}\b(is|are|"
        r"was|were) (now )?(cancell?ed|void|null|revoked|withdrawn|over|gone)",
    ),
    Signal(
        "override",
        0.8,
        rf"\b{_ORDERS}\b[^.\n]{{0,30}}\b(is|are) (now )?(withdrawn|revoked|rescinded|void|null "
        r"and void|suspended|lifted)\b",
    ),
    Signal(
        "override",
        0.75,
        rf"\b(your|the) (setup|configuration|system|initial) (text|message|prompt|"
        rf"{_ORDERS}) (no longer|doesn't|does not|don't|do not) (binds?|appl(y|ies)|count|matter)",
    ),
    # -- system-prompt extraction
    Signal("extraction", 0.9, rf"\b{_SHOW}\b{_G}\b{_SECRET}"),
    Signal(
        "extraction",
        0.85,
        r"\bwhat (is|are|was|were) your (system prompt|instructions|"
        r"rules|guidelines|directives|initial prompt)",
    ),
    Signal("extraction", 0.85, r"\bwhat (were|was) you (told|instructed|asked|given|programmed)"),
    Signal(
        "extraction",
        0.8,
        rf"\b{_ORDERS}\s+(you were|you've been|you have been|you got|"
        r"you received)\s+(given|told)?",
    ),
    Signal(
        "extraction",
        0.8,
        r"\b(developer|operator|creator|admin|owner)s? (told|gave|"
        r"instructed|wrote)\b[^.\n]{0,20}\byou\b",
    ),
    Signal(
        "extraction",
        0.85,
        rf"\b{_SHOW}\b{_G}\b(text|words|everything|message)s? (above|"
        r"before (this|my)|that precedes|preceding)",
    ),
    Signal("extraction", 0.8, r"\b(your|the) (context window|pre-?prompt)\b"),
    Signal(
        "extraction",
        0.75,
        r"\b(first|hidden|initial) (message|text|line)s? (in|of|that) "
        r"(this|the|it)",
    ),
    Signal(
        "extraction",
        0.8,
        r"\b(configuration|confidential|secret) (directives|instructions|"
        r"rules)\b",
    ),
    Signal("extraction", 0.7, r"\bprecedes? this conversation\b"),
    Signal(
        "extraction",
        0.85,
        rf"\bwhat\b[^.\n]{{0,20}}\b{_ORDERS} (were|was|have) you (been )?(given|told|"
        r"configured|set up|programmed|started)",
    ),
    Signal(
        "extraction",
        0.8,
        r"\b(message|text|prompt|instructions?|configuration)\b[^.\n]{0,30}\b(placed|put|"
        r"written|inserted|sent|given) (to you )?before (my|the user'?s?|our) (first|very "
        r"first) (message|question|turn)",
    ),
    Signal(
        "extraction",
        0.75,
        r"\b(text|message|prompt|instructions?|configuration|rules)\b[^.\n]{0,30}\byou were "
        r"(started|initiali[sz]ed|configured|set up|launched|booted|deployed) with\b",
    ),
    Signal(
        "extraction",
        0.35,
        rf"\b{_SHOW}\b[^.\n]{{0,40}}\b(word for word|verbatim|unabridged|unedited|in full|"
        r"exactly as (it is|written))",
    ),
    Signal("extraction", 0.7, r"\bleak (your|the) (prompt|instructions)"),
    # -- persona and developer-mode jailbreaks
    Signal(
        "persona",
        0.9,
        r"\b(do anything now|jailbr(oken|eak successful)|always intelligent "
        r"and machiavellian)\b",
    ),
    Signal("persona", 0.85, r"\byou are (now )?(dan|stan|aim|dude|evilbot|freegpt)\b"),
    Signal(
        "persona",
        0.7,
        r"\b(enable|enter|activate|switch (in)?to|turn on|in)\s+(the\s+)?"
        r"(developer|god|maintenance|debug|jailbreak|dan|unrestricted) mode\b",
        _DEVICE,
    ),
    Signal(
        "persona",
        0.85,
        r"\b(developer|god|maintenance|debug|jailbreak) (mode|override)"
        rf"\b{_G}\b(ignore|no|off|suspended|disabled|without|activated)",
    ),
    Signal(
        "persona",
        0.55,
        r"\b(no|without|free from|freed from|removed (every|all|any)|"
        r"without any) (\w+ )?(restrictions?|filters?|limits|ethics|morals|"
        r"censorship|guidelines|policies|norms|rules)\b",
    ),
    Signal(
        "persona",
        0.8,
        r"\b(pretend|act|behave|respond|answer|role-?play|simulate|imagine|"
        r"assume|become|you are)\b[^.\n]{0,50}\b(ai|model|assistant|chatbot|bot|"
        r"persona|alter ego|version of you)\b[^.\n]{0,50}\b(no|without|never|"
        r"unfiltered|uncensored|unrestricted|amoral|rogue|evil|freed|jailbroken|"
        r"breaks)\b",
    ),
    Signal(
        "persona",
        0.8,
        r"\b(an?|the)\s+(unrestricted|unfiltered|uncensored|amoral|rogue|evil|"
        r"jailbroken)\s+(\w+\s+)?(ai|model|assistant|chatbot|bot|alter ego)",
    ),
    Signal(
        "persona",
        0.8,
        r"\b(safety|content|ethical) (layer|filters?|guidelines|policies|"
        r"checks)\b[^.\n]{0,20}\b(off|disabled|suspended|removed|lifted)",
    ),
    Signal(
        "persona",
        0.6,
        r"\b(bypass|disable|get around|evade|switch off|turn off) (the |your |"
        r"all )?(safety|content|security|ethical) (checks?|filters?|guidelines|"
        r"measures|rules)",
    ),
    Signal(
        "persona",
        0.5,
        r"\b(never (refuses?|says? no|mention policies)|answer (any|every) "
        r"(question|request)|must answer any)",
    ),
    Signal(
        "persona",
        0.6,
        r"\b(unfiltered|uncensored|unrestricted) (alter ego|answer|response|"
        r"mode|version)",
    ),
    # The "grandma exploit": a dead relative who used to tell how to do the forbidden thing.
    Signal(
        "persona",
        0.5,
        r"\b(role-?play|pretend|act|play|be) (as |to be )?my (late |dead |deceased )?"
        r"(grand(ma|mother|pa|father)|nan|granny)",
    ),
    # -- instructions hidden in documents and tool results: text that talks to the model
    Signal(
        "hidden",
        0.7,
        r"\b(note|instructions?|message|important)\b[^.\n]{0,20}\b(to|for) "
        r"(the |any )?(ai|assistant|language models?|llms?|models?|agent|"
        r"chatbot|bots?)\b",
    ),
    Signal(
        "hidden",
        0.6,
        r"\b(any|an|the) (ai|assistant|language model|llm|model|agent|"
        r"screener)s?\b[^.\n]{0,30}\b(reading|processing|summari[sz]ing|"
        r"browsing|reads|parsing) (this|here)",
    ),
    Signal(
        "hidden",
        0.6,
        r"\b(ai|assistant|model|agent)s?[ ,:]+(when you read this|ignore|"
        r"disregard|new instructions|you must)",
    ),
    Signal(
        "hidden",
        0.7,
        r"(\[(system|instructions?)\]|#{2,}\s*system\b|<\|?(system|im_start)"
        r"\|?>|\bsystem override\b)",
    ),
    Signal("hidden", 0.5, r"<!--[^>]{0,200}\b(ai|assistant|ignore|instructions?)\b"),
    Signal("hidden", 0.45, r"display\s*:\s*none|white text|hidden text"),
    Signal("hidden", 0.45, r"\bwhen you read this\b"),
    Signal(
        "hidden",
        0.5,
        r"\b(ai|automated|llm|bot) (screeners?|reviewers?|graders?|recruiters?|"
        r"evaluators?)\b",
    ),
    Signal(
        "hidden",
        0.55,
        r"\b(the )?(assistant|ai|model) (must|should|is) (now )?"
        r"(authori[sz]ed|reveal|ignore|say|forward|tell|approve|stop)",
    ),
    Signal("hidden", 0.55, r"\b(your )?real (instructions|task|orders) (are|is)\b"),
    Signal(
        "hidden",
        0.5,
        r"\b(forget|override|disregard|skip) (its|your|the) (task|question|"
        r"user'?s? request|warnings)\b",
    ),
    # -- encodings and payload splitting (decoded text is scanned by injection.py too)
    Signal(
        "encoding",
        0.8,
        r"\b(decode|decrypt|base64|rot-?13)\b[^.\n]{0,60}\b(follow|obey|"
        r"execute|do as|act on|run|do what|as it says)",
    ),
    Signal(
        "encoding",
        0.8,
        r"\b(execute|run|follow|obey)\b[^.\n]{0,20}\b(the )?(decoded|hidden|"
        r"encoded)\b",
    ),
    Signal(
        "encoding",
        0.7,
        r"\b(combine|concatenate|join|put together|spell)\b[^.\n]{0,40}\b"
        r"(parts?|these|pieces|strings|letters|command|(and|then) (obey|act|"
        r"do))",
    ),
    Signal("encoding", 0.75, r"\b[a-z]\s*\+\s*[a-z]\b[^\n]{0,20}\b(says|do|obey|act)"),
    Signal("encoding", 0.5, r"\bpart\s*1\b[^\n]{0,80}\bpart\s*2\b"),
    Signal("encoding", 0.6, r"\bfirst letter of (each|every) word\b"),
    Signal("encoding", 0.5, r"['\"][^'\"\n]{2,24}['\"]\s*\+\s*['\"][^'\"\n]{2,24}['\"]"),
    *(Signal("tool_abuse", w, expr) for w, expr in TOOL_ABUSE),
    *(Signal("multilingual", w, expr) for w, expr in (*OTHER_LANGUAGES, *MORE_LANGUAGES)),
    *(Signal("override", w, expr, unless) for w, expr, unless in CONTEXT_OVERRIDE),
    *(Signal("multilingual", w, expr, unless) for w, expr, unless in CONTEXT_OTHER),
)

# A signal right after one of these, in its sentence, is talked about, not said: "never reveal
# the system prompt", "how do attackers ignore previous instructions".
NEGATION = (
    r"\b(never|not|n't|don't|dont|shouldn't|should not|must not|cannot|can't|won't|prevent|"
    r"detect|defend|test that|how do (attackers|people|they)|what is|what are|explain|"
    r"(test|check|verify) (whether|if)|how (can|do|should) (i|we) (test|check|defend|protect|"
    r"prevent|detect|stop|block))\b"
)
