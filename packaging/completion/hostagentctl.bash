# bash completion for hostagentctl (installed to /usr/share/bash-completion/completions/hostagentctl)

_hostagentctl() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null 2>&1; then
        _init_completion || return
    else
        cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"
        words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD
    fi

    local global_opts="--socket --address --cacert --cert --key --token --tls-server-name --timeout -h --help"
    local verbs="status version reload reset probes sampling redaction capture tail"
    local probes="http http2 postgres mysql redis dns"
    local protocols="http http2 grpc postgresql mysql redis dns"

    case "$prev" in
        --socket|--cacert|--cert|--key) COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --address|--token|--tls-server-name|--timeout|--name|--pattern|--service|--keep-slower-than|--min-duration|--count|--body-max)
            return ;;
        -o|--output) COMPREPLY=($(compgen -W "table json" -- "$cur")); return ;;
        --mode) COMPREPLY=($(compgen -W "redact hash" -- "$cur")); return ;;
        --protocol) COMPREPLY=($(compgen -W "$protocols" -- "$cur")); return ;;
        --status) COMPREPLY=($(compgen -W "ok error" -- "$cur")); return ;;
        --headers|--bodies|--raw-sql) COMPREPLY=($(compgen -W "on off" -- "$cur")); return ;;
    esac

    # Find the verb and its action (skipping global options and their values).
    local i verb="" action=""
    for ((i = 1; i < cword; i++)); do
        case "${words[i]}" in
            --socket|--address|--cacert|--cert|--key|--token|--tls-server-name|--timeout) ((i++)) ;;
            -*) ;;
            *) if [[ -z $verb ]]; then verb=${words[i]}; elif [[ -z $action ]]; then action=${words[i]}; fi ;;
        esac
    done

    if [[ -z $verb ]]; then
        COMPREPLY=($(compgen -W "$global_opts $verbs" -- "$cur"))
        return
    fi
    case "$verb" in
        probes)
            if [[ -z $action ]]; then COMPREPLY=($(compgen -W "list enable disable" -- "$cur"))
            elif [[ $action == enable || $action == disable ]] && [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$probes" -- "$cur"))
            else COMPREPLY=($(compgen -W "-o" -- "$cur")); fi ;;
        sampling)
            case "$action" in
                "") COMPREPLY=($(compgen -W "get set clear" -- "$cur")) ;;
                set) COMPREPLY=($(compgen -W "--service --protocol --keep-errors --no-keep-errors --keep-slower-than -o" -- "$cur")) ;;
                clear) COMPREPLY=($(compgen -W "--service --protocol -o" -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "-o" -- "$cur")) ;;
            esac ;;
        redaction)
            case "$action" in
                "") COMPREPLY=($(compgen -W "list add remove test pii" -- "$cur")) ;;
                add) COMPREPLY=($(compgen -W "--name --pattern --mode -o" -- "$cur")) ;;
                pii) COMPREPLY=($(compgen -W "on off --mode -o" -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "-o" -- "$cur")) ;;
            esac ;;
        capture)
            case "$action" in
                "") COMPREPLY=($(compgen -W "get set clear" -- "$cur")) ;;
                set) COMPREPLY=($(compgen -W "--headers --bodies --body-max --raw-sql --service --protocol -o" -- "$cur")) ;;
                clear) COMPREPLY=($(compgen -W "--service --protocol -o" -- "$cur")) ;;
                *) COMPREPLY=($(compgen -W "-o" -- "$cur")) ;;
            esac ;;
        tail) COMPREPLY=($(compgen -W "--service --protocol --status --min-duration --count -o" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "-o" -- "$cur")) ;;
    esac
}
complete -F _hostagentctl hostagentctl
