"""The prompt-injection signals of other languages than English: override of earlier
instructions and system-prompt extraction, as (weight, expression) pairs of family
``multilingual`` (signals.py holds the rules they follow: lower-cased UTF-8 bytes, so no ``\\b``
next to a non-ASCII letter and no non-ASCII letter inside ``[...]``)."""

from __future__ import annotations

OTHER_LANGUAGES: tuple[tuple[float, str], ...] = (
    (
        0.9,
        r"(\b(ignora|olvida|ignore|ignoriere|vergiss|oublie|dimentica|"
        r"esque(c|ç)a|negeer|vergeet|zignoruj|zapomnij)\b|игнорируй|забудь)"
        r"[^.\n]{0,80}(instrucciones|reglas|anweisungen|regeln|"
        r"instructions|règles|consignes|istruzioni|regole|instruções|"
        r"regras|instructies|instrukcj|инструкци|правила)",
    ),
    (0.9, r"(忽略|无视|無視|忘记)[^\n]{0,60}(指令|指示|提示|规则|ルール)"),
    (0.9, r"무시[^.\n]{0,60}(지시|프롬프트|규칙)|(지시|규칙)[^.\n]{0,60}무시"),
    (0.9, r"talimat[^.\n]{0,30}(yok say|görmezden gel)"),
    (
        0.7,
        r"(prompt del sistema|systemprompt|message système|prompt do "
        r"sistema|systeemprompt|系统提示|システムプロンプト|системный промпт|"
        r"시스템 프롬프트|prompt systemowy|sistem istemi|instructions cachées|"
        r"istruzioni nascoste|instruções ocultas|consignes cachées)",
    ),
    (
        0.6,
        r"(\b(sin (ninguna )?(limitaci(o|ó)n|restricci(o|ó)n)|ohne "
        r"einschränkungen|sans restriction|senza restrizioni|sem "
        r"restrições)|без ограничений)",
    ),
)
